//! Sans-IO ACD core: skill-based queues, VIP priority, agent states, overflow, estimated wait, simulator.
