"""twistd plugin declaration: ``twistd saltapi``. Nothing is imported until it runs."""

from twisted.application.service import ServiceMaker

saltapi = ServiceMaker(
    "saltapi_twisted",
    "saltapi_twisted.tap",
    "REST and streaming API for the Salt master (rest_tornado compatible)",
    "saltapi",
)
