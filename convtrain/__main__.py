"""``python -m convtrain`` == ``convtrain``."""
from convtrain.app.cli import main

main()
