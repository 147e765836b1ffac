"""meta_features: dataset meta-representations, similarities and transferability estimates."""
