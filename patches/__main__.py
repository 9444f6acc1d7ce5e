"""``python -m unmix_ext.patches``: each solo-learn patch and its status; exit 1 if any failed."""
import sys

from unmix_ext.patches._core import PatchStatus, apply_all


def main() -> int:
    patches = apply_all()
    width = max(len(p.name) for p in patches)
    for p in patches:
        reason = f" ({p.reason})" if p.reason else ""
        print(f"{p.name:<{width}}  {p.status.value:<10}  {p.summary}{reason}")
    return 1 if any(p.status is PatchStatus.FAILED for p in patches) else 0


if __name__ == "__main__":
    sys.exit(main())
