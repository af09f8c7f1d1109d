"""Build fastdistill's native extensions.

* ``fastdistill._C``: every ``csrc/cpu/*.cpp`` file, C++17, -O3, OpenMP. No ``-march=native``: files that hold
  AVX2 / AVX-512 kernels enable those ISAs with ``#pragma GCC target`` and are chosen at run time.
* ``fastdistill._cuda``: every ``csrc/cuda/*.cu`` file, built with nvcc when it is found.
  ``FASTDISTILL_CUDA=0`` skips it, ``FASTDISTILL_CUDA=1`` requires it (the build fails loudly without nvcc).

A failed native build never fails the install: the package then runs on its Numba and pure-Python backends, and
``fastdistill info`` reports why the native module is missing (the reason is written to ``_build_status.json``).
"""
import glob
import json
import os
import shutil
import subprocess
import sys
import sysconfig

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
STATUS_FILE = os.path.join("fastdistill", "_build_status.json")


def _pybind_include() -> str:
    import pybind11

    return pybind11.get_include()


def _find_nvcc():
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    candidates = [os.path.join(cuda_home, "bin", "nvcc")] if cuda_home else []
    candidates += [shutil.which("nvcc") or "", "/usr/local/cuda/bin/nvcc"]
    for path in candidates:
        if path and os.path.exists(path):
            return path
    return None


class BuildExt(build_ext):
    """Builds the C++ module with the compiler setuptools picks and the CUDA module with nvcc; records outcomes."""

    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:  # compile the many kernel files on every core (setuptools' default is one)
            self.parallel = os.cpu_count() or 1

    def run(self):
        self.status = {}
        super().run()
        self._write_status()

    def copy_extensions_to_source(self):
        # `build_ext --inplace`: copy only what was built (a skipped CUDA module has no file to copy).
        everything = self.extensions
        self.extensions = [ext for ext in everything if self.status.get(ext.name) == "built"]
        try:
            super().copy_extensions_to_source()
        finally:
            self.extensions = everything

    def build_extension(self, ext):
        if ext.name == "fastdistill._cuda":
            return self._build_cuda(ext)
        try:
            super().build_extension(ext)
            self.status[ext.name] = "built"
        except Exception as exc:  # a broken compiler must not break `pip install`
            if os.environ.get("FASTDISTILL_NATIVE") == "1":
                raise
            self.status[ext.name] = f"build failed: {exc}"
            print(f"WARNING: {ext.name} was not built ({exc}); the Numba/Python backends will serve", file=sys.stderr)

    def _build_cuda(self, ext):
        mode = os.environ.get("FASTDISTILL_CUDA", "auto")
        nvcc = _find_nvcc()
        if mode == "0":
            self.status[ext.name] = "skipped: FASTDISTILL_CUDA=0"
            return
        if nvcc is None:
            if mode == "1":
                raise RuntimeError("FASTDISTILL_CUDA=1 but nvcc was not found (set CUDA_HOME or put nvcc on PATH)")
            self.status[ext.name] = "skipped: nvcc not found"
            return
        try:
            self._nvcc_link(ext, nvcc)
            self.status[ext.name] = "built"
        except Exception as exc:
            if mode == "1":
                raise
            self.status[ext.name] = f"build failed: {exc}"
            print(f"WARNING: {ext.name} was not built ({exc})", file=sys.stderr)

    def _nvcc_link(self, ext, nvcc):
        out = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        tmp = os.path.join(self.build_temp, "cuda")
        os.makedirs(tmp, exist_ok=True)
        includes = [_pybind_include(), sysconfig.get_paths()["include"], os.path.join(HERE, "csrc")]
        arch = os.environ.get(
            "FASTDISTILL_CUDA_ARCH", "-gencode=arch=compute_80,code=sm_80 -gencode=arch=compute_90,code=sm_90 "
            "-gencode=arch=compute_90,code=compute_90").split()
        objs = []
        for src in ext.sources:  # always recompiled: a handful of small files
            obj = os.path.join(tmp, os.path.basename(src) + ".o")
            cmd = [nvcc, "-c", src, "-o", obj, "-O3", "-std=c++17", "--compiler-options", "-fPIC,-fvisibility=hidden",
                   *arch, *[f"-I{i}" for i in includes]]
            print(" ".join(cmd))
            subprocess.check_call(cmd)
            objs.append(obj)
        cmd = [nvcc, "-shared", "-o", out, *objs, "--cudart", "static", *arch]
        print(" ".join(cmd))
        subprocess.check_call(cmd)

    def _write_status(self):
        path = os.path.join(self.build_lib, STATUS_FILE) if not self.inplace else os.path.join(HERE, STATUS_FILE)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as fh:
            json.dump(self.status, fh, indent=1)


cpp_sources = sorted(glob.glob("csrc/cpu/*.cpp"))
cuda_sources = sorted(glob.glob("csrc/cuda/*.cu"))
extensions = [
    Extension(
        "fastdistill._C",
        sources=cpp_sources,
        depends=sorted(glob.glob("csrc/*.h") + glob.glob("csrc/cpu/*.h")),  # rebuild when a kernel header changes
        include_dirs=[_pybind_include(), "csrc"],
        language="c++",
        extra_compile_args=["-std=c++17", "-O3", "-fopenmp", "-fvisibility=hidden", "-fno-math-errno"],
        extra_link_args=["-fopenmp"],
    )
]
if cuda_sources:
    extensions.append(Extension("fastdistill._cuda", sources=cuda_sources))

setup(ext_modules=extensions, cmdclass={"build_ext": BuildExt}, package_data={"fastdistill": ["_build_status.json"]})
