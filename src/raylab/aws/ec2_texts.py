"""AWS's own texts for the RunInstances errors the lab meets (the local twin and the rehearsal
answer with them, word for word)."""

VCPU_LIMIT_CODE = "VcpuLimitExceeded"
VCPU_LIMIT_MESSAGE = (
    "You have requested more vCPU capacity than your current vCPU limit of {limit} allows for the "
    "instance bucket that the specified instance type belongs to. Please visit "
    "http://aws.amazon.com/contact-us/ec2-request to request an adjustment to this limit."
)
# For spot requests over the spot vCPU quota AWS answers with this code instead.
SPOT_LIMIT_CODE = "MaxSpotInstanceCountExceeded"
SPOT_LIMIT_MESSAGE = "Max spot instance count exceeded"
CAPACITY_CODE = "InsufficientInstanceCapacity"
CAPACITY_MESSAGE_OD = (
    "We currently do not have sufficient {itype} capacity in the Availability Zone you requested "
    "({az}). Our system will be working on provisioning additional capacity. You can currently get "
    "{itype} capacity by not specifying an Availability Zone in your request or choosing a different "
    "Availability Zone."
)
CAPACITY_MESSAGE_SPOT = "There is no Spot capacity available that matches your request."
