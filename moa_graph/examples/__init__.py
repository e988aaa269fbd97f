"""Runnable examples of composing the MoA graph into larger LangGraph agents, and pictures.

- `moa_graph.examples.router`: a router that sends hard questions to the MoA subgraph and
  easy ones to a single model (`python -m moa_graph.examples.router`, offline).
- `moa_graph.examples.wrapper`: a parent graph with its own state shape, and the node that
  maps that state into the MoA graph's `messages` and back
  (`python -m moa_graph.examples.wrapper`, offline).
- `moa_graph.examples.figures`: matplotlib pictures of a graph's nodes and edges and of a
  turn's timeline, drawn offline (the notebooks use them; matplotlib is in the `bench` extra).
"""
