"""The pipeline stages: scan ("where"), bank ("what"), search (REINFORCE), eval."""
