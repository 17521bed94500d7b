"""What ``sftmix`` (the recipe) and ``bench`` (the harness) share and neither owns: the one user-error
type, the registry, the config schema base, atomic writes and hashes. Imports neither package."""
