"""Compile tests/c/kstructs.h with a real compiler and read every offset and size.

For each config the probe file declares, per member, two initialised char
arrays whose sizes are offsetof+1 and sizeof+1; the compiler's assembly
output states each array's size in a `.size` directive, which is the same on
every ELF target.  No linking, no running: cross compilers need no sysroot.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from emu.kconfig import USER_OPTIONS, Config
from emu.structs import kernel_for

HEADER = Path(__file__).with_name("c") / "kstructs.h"
ARCH_DEFINE = {"i386": "ARCH_X86", "x86_64": "ARCH_X86", "ppc32": "ARCH_PPC", "ppc64": "ARCH_PPC",
               "s390x": "ARCH_S390", "sparc64": "ARCH_SPARC", "arm": "ARCH_ARM", "mips64": "ARCH_MIPS"}
# engine struct name -> C type name
C_TYPE = {"page": "struct page", "spinlock_t": "spinlock_t", "raw_spinlock_t": "raw_spinlock_t",
          "arch_spinlock_t": "arch_spinlock_t", "lockdep_map": "struct lockdep_map",
          "list_head": "struct list_head", "rb_node": "struct rb_node",
          "hlist_head": "struct hlist_head", "hlist_node": "struct hlist_node",
          "stable_node": "struct stable_node", "rmap_item": "struct rmap_item", "atomic_t": "atomic_t"}
SIZE_RE = re.compile(r"^\s*\.size\s+(\w+),\s*(\d+)\s*$", re.M)


def defines(cfg: Config) -> list[str]:
    """What Kconfig would write to autoconf.h for this config, as -D flags."""
    out = [f"-D{ARCH_DEFINE[cfg.arch.name]}", f"-DCONFIG_NR_CPUS={cfg.nr_cpus}",
           f"-DCONFIG_SPLIT_PTLOCK_CPUS={cfg.split_ptlock_cpus}"]
    if cfg.kernel == "2.6.33":
        out.append("-DKERNEL_2_6_33")
    for name in USER_OPTIONS:
        if cfg[name]:
            out.append("-DWANT_PAGE_VIRTUAL" if name == "WANT_PAGE_VIRTUAL" else f"-DCONFIG_{name}")
    if cfg["GENERIC_LOCKBREAK"]:
        out.append("-DCONFIG_GENERIC_LOCKBREAK")
    return out


def probe_source(cfg: Config) -> tuple[str, dict[str, tuple[str, str, str]]]:
    """C source with one probe pair per member; and probe name -> (struct, path, what)."""
    from emu.ctype import walk

    lines = [f'#include "{HEADER}"',
             "char probe_word[sizeof(long) + 1] = {1};",
             "char probe_big[(__BYTE_ORDER__ == __ORDER_BIG_ENDIAN__) + 1] = {1};"]
    probes: dict[str, tuple[str, str, str]] = {}
    for sname, rec in kernel_for(cfg).structs.items():
        ctype = C_TYPE[sname]
        n = f"s_{len(probes)}"
        lines.append(f"char {n}[sizeof({ctype}) + 1] = {{1}};")
        probes[n] = (sname, "", "size")
        for f in walk(rec):
            if f.anonymous:
                continue
            o, s = f"o_{len(probes)}", f"z_{len(probes)}"
            lines.append(f"char {o}[__builtin_offsetof({ctype}, {f.path}) + 1] = {{1}};")
            lines.append(f"char {s}[sizeof((({ctype} *)0)->{f.path}) + 1] = {{1}};")
            probes[o] = (sname, f.path, "offset")
            probes[s] = (sname, f.path, "size")
    return "\n".join(lines) + "\n", probes


def compile_layout(cfg: Config, workdir: Path) -> dict[tuple[str, str, str], int]:
    """Run the arch's compiler; return {(struct, path, 'offset'|'size'): value}
    plus ('', 'long', 'size') and ('', 'big_endian', 'flag') from the target."""
    src, probes = probe_source(cfg)
    name = f"{cfg.arch.name}-{abs(hash(cfg)):x}"
    c = workdir / f"{name}.c"
    c.write_text(src)
    cmd = [*cfg.arch.gcc, "-S", "-O0", "-std=gnu11", "-o", "-", *defines(cfg), str(c)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stderr}")
    sizes = {m.group(1): int(m.group(2)) for m in SIZE_RE.finditer(res.stdout)}
    out = {(s, p, w): sizes[n] - 1 for n, (s, p, w) in probes.items()}
    out[("", "long", "size")] = sizes["probe_word"] - 1
    out[("", "big_endian", "flag")] = sizes["probe_big"] - 1
    return out
