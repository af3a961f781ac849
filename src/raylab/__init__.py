"""raylab: run the lab "Ray on AWS EC2" stage by stage, and prove each stage worked."""

__version__ = "0.1.0"
