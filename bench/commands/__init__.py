"""One module per `bench` subcommand: ``add_arguments(parser)`` and ``run(args)``.

Imports inside ``run`` are deliberate throughout this package: `bench.cli` imports every command module to build
its parser, so whatever a module imports at its top is paid by `bench --help`, `bench table` and `bench status`,
which must start without torch, transformers or the pipeline (tests/test_layers.py checks the first two). A
command's own work (training, generation, judging) is imported when it runs."""
