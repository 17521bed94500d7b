"""The stage bodies: what each kind of stage does, given the run's :class:`~bench.pipeline.context.RunContext`."""
