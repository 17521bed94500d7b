"""One module per `bench` subcommand: ``add_arguments(parser)`` and ``run(args)``.

`bench.cli` imports only the chosen subcommand's module (``bench --help`` imports none), so a command module
imports what it needs at its top, like any other module: only `bench train`, `bench dynamics` and `bench perf` keep
torch (through the recipe) inside ``run``, with a comment, so that their ``--help`` and argument errors stay quick.
`bench --help`, `table`, `status`, `variants` and `tasks` run without importing torch or transformers
(tests/test_layers.py)."""
