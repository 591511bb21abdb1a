"""Pytest fixtures for projects and plugins built on the agent."""
