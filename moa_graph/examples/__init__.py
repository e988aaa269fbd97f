"""Runnable examples of composing the MoA graph into larger LangGraph agents.

- `moa_graph.examples.router`: a router that sends hard questions to the MoA subgraph and
  easy ones to a single model (`python -m moa_graph.examples.router`, offline).
- `moa_graph.examples.wrapper`: a parent graph with its own state shape, and the node that
  maps that state into the MoA graph's `messages` and back.
"""
