"""Zero lost requests, measured (tests/scenarios/test_zero_loss.py; README "Zero lost
requests"): ledger.py judges each request, service.py is a ServedModel's Service as a
client-side load balancer sees it, traffic.py sends bounded REST and gRPC predictions."""
