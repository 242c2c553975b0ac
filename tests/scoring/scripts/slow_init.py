"""init() takes a long time (a big model loading): the service must still stop at once on SIGTERM."""

import time


def init():
    time.sleep(60)


def run(data):
    return data
