#!/usr/bin/env bash
# A native BLAS/LAPACK for Spark ML (PCA's SVD, LogisticRegression's L-BFGS, ...): Spark's
# dev.ludovic.netlib loads libblas.so.3 and liblapack.so.3 by their system names and otherwise
# falls back to Java's BLAS ("netlib-blas: dlopen(libblas.so.3) failed" on stderr). This makes
# the native ones present when it can (root and apt-get: OpenBLAS, as .ci/run does) and says in
# one line when it cannot. Never fails: the project runs without it, only slower.
# Elsewhere: install OpenBLAS (or any libblas.so.3 / liblapack.so.3) with the system's package
# manager, or point Spark at one with
#   FRUITS__SPARK__JAVA_OPTIONS="-Ddev.ludovic.netlib.blas.nativeLibPath=/path/libopenblas.so
#     -Ddev.ludovic.netlib.lapack.nativeLibPath=/path/libopenblas.so"
set -u
found() { ldconfig -p 2>/dev/null | grep -q "$1"; }
present() { found 'libblas\.so\.3 ' && found 'liblapack\.so\.3 '; }
packages="libopenblas0-pthread liblapack3"

if present; then
  echo "setup: native BLAS/LAPACK present (libblas.so.3, liblapack.so.3): Spark ML uses it"
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  if { DEBIAN_FRONTEND=noninteractive apt-get install -y -q $packages >/dev/null 2>&1 \
       || { apt-get update -q >/dev/null 2>&1 \
            && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $packages >/dev/null 2>&1; }; } \
     && present; then
    echo "setup: installed a native BLAS/LAPACK for Spark ML ($packages)"
    exit 0
  fi
  reason="apt-get install $packages failed"
elif [ "$(id -u)" != 0 ]; then
  reason="installing needs root: sudo apt-get install $packages (or your system's OpenBLAS)"
else
  reason="no apt-get here: install OpenBLAS with the system's package manager"
fi
echo "setup: no native BLAS/LAPACK (libblas.so.3, liblapack.so.3) and none installed ($reason): Spark ML runs on Java's BLAS, slower"
exit 0
