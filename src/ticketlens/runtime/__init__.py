"""What the workflow runs around the science: the Snakefile's start-up check (`startup`) and the
workstation's job server (`jobclient` in every `ticketlens` command, `jobserver` the forking server)."""
