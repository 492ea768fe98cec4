"""`python -m embedstore ...` (what `torchrun -m embedstore` runs) is the same as the `embedstore` command."""
from embedstore.cli.app import main

main()
