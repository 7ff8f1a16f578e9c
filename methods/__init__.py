"""Mitigation strategies (a registry) and the transferability maths they use.

Importing the package loads no torch: ``METHODS`` imports the built-in strategies' modules on its first lookup
(``names()``, ``get``), and ``methods.declarations`` reads their declarations without importing them.
"""

from methods.base import METHODS, HParam, Method, MethodConfigError, Space, register_method

__all__ = ["METHODS", "HParam", "Method", "MethodConfigError", "Space", "register_method"]
