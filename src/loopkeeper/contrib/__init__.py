"""Integrations with frameworks and servers; each depends only on names ``loopkeeper`` exports."""
