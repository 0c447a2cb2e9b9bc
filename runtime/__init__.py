"""Device side: the policy, its file format, plants, the control loop and the MQTT agent."""
