"""Cloud providers: the `CloudProvider` protocol and its Azure and local implementations."""
