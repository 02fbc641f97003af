"""python -m zswarm"""

from zswarm.cli import main

main()
