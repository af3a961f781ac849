"""boto3 helpers. boto3 is imported only inside these modules."""
