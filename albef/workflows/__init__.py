"""The workflows: what the commands do, written once against the library.

A workflow assembles the library's layers into one job (train a task from a config, evaluate a checkpoint,
benchmark a model preset, ...). The CLI parses arguments, resolves the config and calls a workflow; the
library below never imports this package (see the README's "Architecture").
"""
