"""World-model families. Importing this package registers every built-in family."""
