"""The task functions of dask_peer.py, in a module of their own so that worker processes
import them by name instead of receiving pickled code."""
import os
import time


def inc(x):
    return x + 1


def add(x, y):
    return x + y


def slow_double(x):
    time.sleep(0.05)
    return 2 * x


def make_bytes(n):
    return os.urandom(n)
