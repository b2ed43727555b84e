"""Small helpers shared by the tasks: config resolvers, instantiation, run bookkeeping."""
