"""The `medattn` command line (installed as medattn.cli): parses options, shows progress, sets exit codes."""
