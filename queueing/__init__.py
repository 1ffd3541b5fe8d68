"""The job engine: jobs, queues, status and file stores, the worker pool and the publisher.

Imports only the standard library and backend drivers, never Flask, `handlers` or `containers`.
"""
