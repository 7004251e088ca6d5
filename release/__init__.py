"""Release tooling: the version check the release workflow and the unit tests share."""
