"""Build the Cython extensions in cython_ext/ into the emu package."""

from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        "emu._atomics",
        ["cython_ext/atomics.pyx"],
        include_dirs=["cython_ext"],
        extra_compile_args=["-O2"],
    ),
    Extension(
        "emu._ksm_sweep",
        ["cython_ext/ksm_sweep.pyx"],
        include_dirs=["cython_ext"],
        extra_compile_args=["-O2"],
    ),
]

setup(ext_modules=cythonize(extensions, include_path=["cython_ext"],
                            compiler_directives={"language_level": "3"}))
