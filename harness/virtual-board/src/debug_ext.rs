//! Extensions of the debug port for the simulated probe (hil-virtual-probe).
