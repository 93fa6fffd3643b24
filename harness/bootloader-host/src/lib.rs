//! Host side of the ST bootloaders: AN3155 client over serialport, DfuSe client over a control-transfer trait (nusb for real USB), control lines
