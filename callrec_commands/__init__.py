"""The operator commands of ``callrec`` that outgrew ``callrec_cli.py``: one module each.

``callrec_cli.main`` registers them; each module keeps its heavy imports inside the command.
"""
