//! Device side of ST's ROM bootloader: AN3155 USART and DfuSe USB protocol engines (shares no framing code with the host clients)
