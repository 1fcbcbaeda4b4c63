"""``python -m config``: print the README configuration table, or check the environment.

``python -m config check`` loads the settings and prints one line naming a bad one (exit 2).
"""

import sys
from pathlib import Path

from config.settings import ConfigError, declared_settings, load_settings


def markdown_table() -> str:
    lines = ["| Variable | Default | What it does |", "|---|---|---|"]
    for env, default, help_text, _secret in declared_settings():
        shown = default.replace(str(Path.cwd()), ".")  # defaults under ./var, not this machine
        lines.append(f"| `{env}` | {f'`{shown}`' if shown else '(empty)'} | {help_text} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if argv[:1] == ["check"]:
        try:
            load_settings()
        except ConfigError as exc:
            print(f"callrec: bad configuration: {exc}", file=sys.stderr)
            return 2
        print("configuration ok")
        return 0
    print(markdown_table())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
