"""hpr's collectives over point-to-point messages: recursive doubling, Rabenseifner (recursive halving
reduce-scatter + recursive doubling allgather), the ring, binomial and scatter-allgather broadcast, the
dissemination barrier. Each takes a Link (the messages, with polite deadline waits), works on 1-D
contiguous arrays, and leaves the same bits on every rank (each reduced block is computed by one rank,
or by two ranks as a+b and b+a, which IEEE addition makes equal).

Non-power-of-two sizes fold the first 2·rem ranks in pairs: even ranks hand their data to the odd
neighbour and sit out, and get the result back at the end (the scheme MPICH documents).
ALLREDUCE names the point-to-point allreduce algorithms: the one table the channels dispatch on (the node
engine's "shm" and "hierarchical" live in channel.py; cost.py predicts every one's time).
Usage: ``ALLREDUCE["ring"](link, x, red, scale)`` with ``red(acc, incoming)`` a reduce_into."""
import numpy as np

TAG = 11  # collectives run on their own duplicated communicator; one tag is enough


def block_bounds(n, p):
    """Offsets of p blocks of n elements as numpy.array_split makes them: p+1 numbers."""
    q, r = divmod(n, p)
    return [i * q + min(i, r) for i in range(p + 1)]


def _fold(p):
    """(pof2, rem): the largest power of two <= p and the number of ranks above it."""
    pof2 = 1 << (p.bit_length() - 1)
    return pof2, p - pof2


def _newrank(rank, rem):
    """Rank among the pof2 active ranks after folding, or -1 for a rank that sits out."""
    if rank < 2 * rem:
        return rank // 2 if rank % 2 else -1
    return rank - rem


def _oldrank(newrank, rem):
    return newrank * 2 + 1 if newrank < rem else newrank + rem


def _fold_in(link, x, red, rem):
    """Even ranks below 2·rem send their data to the odd neighbour, which reduces it in."""
    r = link.rank
    if r < 2 * rem:
        if r % 2 == 0:
            link.send(x, r + 1)
        else:
            tmp = np.empty_like(x)
            link.recv(tmp, r - 1)
            red(x, tmp)


def _fold_out(link, x, rem):
    r = link.rank
    if r < 2 * rem:
        if r % 2:
            link.send(x, r - 1)
        else:
            link.recv(x, r + 1)


def recursive_doubling_allreduce(link, x, red, scale=None):
    """log2(p) exchanges of the whole vector: best for small messages."""
    p = link.size
    pof2, rem = _fold(p)
    _fold_in(link, x, red, rem)
    nr = _newrank(link.rank, rem)
    if nr >= 0:
        tmp = np.empty_like(x)
        mask = 1
        while mask < pof2:
            peer = _oldrank(nr ^ mask, rem)
            link.sendrecv(x, peer, tmp, peer)
            red(x, tmp)
            mask <<= 1
        if scale is not None:
            scale(x)
    _fold_out(link, x, rem)
    return x


def rabenseifner_allreduce(link, x, red, scale=None):
    """Recursive halving reduce-scatter, then recursive doubling allgather: 2·log2(p) messages moving
    2·(p-1)/p of the vector; good for medium messages."""
    p = link.size
    pof2, rem = _fold(p)
    _fold_in(link, x, red, rem)
    nr = _newrank(link.rank, rem)
    if nr >= 0:
        b = block_bounds(x.size, pof2)
        tmp = np.empty_like(x)
        lo, hi = 0, pof2  # the blocks this rank is still responsible for
        mask = pof2 >> 1
        while mask:
            peer = _oldrank(nr ^ mask, rem)
            mid = (lo + hi) // 2
            (klo, khi), (slo, shi) = ((mid, hi), (lo, mid)) if nr & mask else ((lo, mid), (mid, hi))
            keep = slice(b[klo], b[khi])
            link.sendrecv(x[b[slo]:b[shi]], peer, tmp[keep], peer)
            red(x[keep], tmp[keep])
            lo, hi = klo, khi
            mask >>= 1
        if scale is not None:
            scale(x[b[lo]:b[hi]])
        mask = 1
        while mask < pof2:
            peer = _oldrank(nr ^ mask, rem)
            if nr & mask:
                plo, phi = lo - mask, lo
            else:
                plo, phi = hi, hi + mask
            link.sendrecv(x[b[lo]:b[hi]], peer, x[b[plo]:b[phi]], peer)
            lo, hi = min(lo, plo), max(hi, phi)
            mask <<= 1
    _fold_out(link, x, rem)
    return x


def ring_reduce_scatter(link, x, red, b=None):
    """p-1 steps around the ring; afterwards rank r holds the reduced block r (array_split bounds) in
    x[b[r]:b[r+1]]. The rest of x is left holding partial sums."""
    p, r = link.size, link.rank
    b = b or block_bounds(x.size, p)
    if p == 1:
        return b
    right, left = (r + 1) % p, (r - 1) % p
    tmp = np.empty_like(x, shape=(max(b[i + 1] - b[i] for i in range(p)),))  # on x's device
    for s in range(p - 1):
        send_blk, recv_blk = (r - s - 1) % p, (r - s - 2) % p
        n = b[recv_blk + 1] - b[recv_blk]
        link.sendrecv(x[b[send_blk]:b[send_blk + 1]], right, tmp[:n], left)
        red(x[b[recv_blk]:b[recv_blk + 1]], tmp[:n])
    return b


def ring_allgather_blocks(link, x, b):
    """Every rank r owns x[b[r]:b[r+1]]; after p-1 steps every rank has all blocks."""
    p, r = link.size, link.rank
    right, left = (r + 1) % p, (r - 1) % p
    for s in range(p - 1):
        send_blk, recv_blk = (r - s) % p, (r - s - 1) % p
        link.sendrecv(x[b[send_blk]:b[send_blk + 1]], right, x[b[recv_blk]:b[recv_blk + 1]], left)
    return x


def ring_allreduce(link, x, red, scale=None):
    """Ring reduce-scatter + ring allgather: 2(p-1) messages moving 2(p-1)/p of the vector; bandwidth-
    optimal for large messages."""
    b = ring_reduce_scatter(link, x, red)
    if scale is not None:
        scale(x[b[link.rank]:b[link.rank + 1]])
    return ring_allgather_blocks(link, x, b)


def binomial_broadcast(link, x, root):
    """log2(p) rounds down a binomial tree rooted at root."""
    p = link.size
    rel = (link.rank - root) % p
    mask = 1
    while mask < p:  # receive from the parent: the rank that differs in my lowest set bit
        if rel & mask:
            link.recv(x, (rel - mask + root) % p)
            break
        mask <<= 1
    mask >>= 1
    while mask:
        if rel + mask < p:
            link.send(x, (rel + mask + root) % p)
        mask >>= 1
    return x


def scatter_allgather_broadcast(link, x, root):
    """Large broadcast: the root's blocks spread down a binomial tree, then a ring allgather (van de
    Geijn); each rank moves about 2·n bytes instead of n·log2(p)."""
    p = link.size
    b = block_bounds(x.size, p)
    rel = (link.rank - root) % p
    # binomial scatter in relative ranks: a subtree rooted at rel covers blocks [rel, rel + extent)
    mask = 1
    while mask < p:
        if rel & mask:
            src = (rel - mask + root) % p
            _recv_rel_blocks(link, x, b, rel, min(rel + mask, p), root, src)
            break
        mask <<= 1
    mask >>= 1
    while mask:
        if rel + mask < p:
            _send_rel_blocks(link, x, b, rel + mask, min(rel + 2 * mask, p), root, (rel + mask + root) % p)
        mask >>= 1
    # now rank with relative index j holds block (j + root) % p: a plain ring allgather finishes
    return ring_allgather_blocks(link, x, b)


def _rel_block_slices(b, lo, hi, root, p):
    """Relative blocks [lo, hi) as at most two contiguous slices of x (they wrap past p)."""
    out = []
    a, z = (lo + root) % p, (hi - 1 + root) % p
    if a <= z:
        out.append(slice(b[a], b[z + 1]))
    else:
        out.append(slice(b[a], b[p]))
        out.append(slice(b[0], b[z + 1]))
    return out


def _send_rel_blocks(link, x, b, lo, hi, root, dest):
    for s in _rel_block_slices(b, lo, hi, root, link.size):
        link.send(x[s], dest)


def _recv_rel_blocks(link, x, b, lo, hi, root, src):
    for s in _rel_block_slices(b, lo, hi, root, link.size):
        link.recv(x[s], src)


def dissemination_barrier(link, token):
    """ceil(log2 p) rounds; in round k rank r signals r+2^k and waits for r-2^k."""
    p, r = link.size, link.rank
    inbox = np.empty_like(token)
    k = 1
    while k < p:
        link.sendrecv(token, (r + k) % p, inbox, (r - k) % p)
        k <<= 1


ALLREDUCE = {"recursive_doubling": recursive_doubling_allreduce, "rabenseifner": rabenseifner_allreduce,
             "ring": ring_allreduce}
