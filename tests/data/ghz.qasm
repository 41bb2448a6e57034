// 4-qubit GHZ over two registers: a[0], a[1] are qubits 0, 1; b[0], b[1] are qubits 2, 3
OPENQASM 2.0;
include "qelib1.inc";
qreg a[2];
qreg b[2];
creg c[4];
h a[0];
cx a[0], a[1];
cx a[1], b[0];
cx b[0], b[1];
barrier a, b;
measure a[0] -> c[0];
measure a[1] -> c[1];
measure b[0] -> c[2];
measure b[1] -> c[3];
