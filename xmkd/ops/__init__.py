"""Wrappers around compiled operators (spconv)."""
