"""The Django test recipe of docs/testing.md, as a project: models, views, tasks, tests."""
