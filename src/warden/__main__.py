"""`python -m warden` runs the command line."""

from warden.cli.app import main

main()
