"""Lightning glue: the classification module, optimiser groups, schedulers, checkpoint IO."""
