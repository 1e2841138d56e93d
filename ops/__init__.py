"""Operator commands (boto3) for deployed environments: ``python -m ops COMMAND``."""
