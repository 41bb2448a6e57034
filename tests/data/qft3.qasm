// 3-qubit QFT of the basis state |5> = |101> (x on qubits 0 and 2), with the final swap.
// cu1 comes from a user gate definition to exercise gate expansion.
OPENQASM 2.0;
include "qelib1.inc";
gate cphase(lambda) c, t {
  u1(lambda/2) c;
  cx c, t;
  u1(-lambda/2) t;
  cx c, t;
  u1(lambda/2) t;
}
qreg q[3];
x q[0];
x q[2];
h q[2];
cphase(pi/2) q[1], q[2];
cu1(pi/4) q[0], q[2];
h q[1];
cphase(pi/2) q[0], q[1];
h q[0];
swap q[0], q[2];
