"""hpr.data: text in, token windows out. Byte corpora (corpus.py) and labelled byte windows (labels.py)
as before; subword tokenizers from Hugging Face ``tokenizers`` or plain bytes (tokenizer.py); inputs
from text folders, JSON Lines, Parquet and standard input (sources.py); prepared token shards, written
under MPI by prepare.py and read in place by TokenShards (shards.py); and Batches, the windows each
global sample index reads (batches.py). Never imports a model or hpr.parallel; a communicator is an
argument. Command line: ``python -m hpr.data tokenizer|prepare|info`` (__main__.py).
Usage: ``d = TokenShards("prepared/"); x, y = Batches(d.train, 256, seed=0).get(0, 32)``
"""
from .batches import Batches, splitmix64, window_starts
from .corpus import SUFFIXES, Corpus, default_cache_dir
from .labels import LabeledWindows, is_test_module
from .preparation import DEFAULT_SHARD_TOKENS, Prepared, prepare
from .shards import SplitTokens, TokenShards, read_meta
from .sources import documents, list_inputs
from .tokenizer import BYTES, END_OF_TEXT, ByteTokenizer, Tokenizer, from_bytes, load_tokenizer, train_bpe

__all__ = ["Batches", "splitmix64", "window_starts", "SUFFIXES", "Corpus", "default_cache_dir",
           "LabeledWindows", "is_test_module", "DEFAULT_SHARD_TOKENS", "Prepared", "prepare", "SplitTokens",
           "TokenShards", "read_meta", "documents", "list_inputs", "BYTES", "END_OF_TEXT", "ByteTokenizer",
           "Tokenizer", "from_bytes", "load_tokenizer", "train_bpe"]
