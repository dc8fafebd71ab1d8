"""Print the target (``cpu`` or ``gpu``) a model repository was built for, or nothing.

    python3 docker/build_target.py MODEL_REPOSITORY/build_info.json

Used by the images' entry scripts; stdlib only (it runs with the image's system python3).
A missing or unreadable ``build_info.json`` prints an empty line: no finished build.
"""

import json
import sys

try:
    with open(sys.argv[1], encoding="utf-8") as f:
        print(json.load(f)["target"])
except (OSError, ValueError, KeyError):
    print("")
