"""Mitigation strategies (a registry) and the transferability maths they use."""

# Importing the built-in strategies registers them.
from methods import bss, class_weighted, delta, finetune, freeze, l2sp, lpft, lwf, trm  # noqa: E402,F401
from methods.base import METHODS, HParam, Method, MethodConfigError, Space, register_method

__all__ = ["METHODS", "HParam", "Method", "MethodConfigError", "Space", "register_method"]
