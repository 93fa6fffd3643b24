//! Peripheral models of the STM32F1 family (RM0008) whose register layout differs from the G0's:
//! RCC, GPIO (CRL/CRH) and DBGMCU. The USART v1 and the F1 flash controller have their own files
//! next to the G0 models (`usart_v1`, `flash_f1`). The chip data selects them by `version`.

pub mod dbgmcu;
pub mod gpio;
pub mod rcc;
