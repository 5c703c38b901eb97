"""``python -m convtrain`` == ``convtrain``."""
from convtrain.cli import main

main()
