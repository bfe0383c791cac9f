"""ksm-emu: placeholder until the emulation lands."""
import sys


def main(argv: list[str] | None = None) -> int:
    print("ksm-emu: the emulation is not built yet; see ksm-layout --help")
    return 0


if __name__ == "__main__":
    sys.exit(main())
