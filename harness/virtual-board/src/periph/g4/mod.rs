//! Peripheral models of the STM32G4 family (RM0440) whose register layout differs from the G0's:
//! the RCC. The G4 USART, GPIO, SYSCFG remap, DBGMCU and FLASH controller share the G0 models
//! (same register layouts; the flash differences are chip data: BKER, MER2, PNB width). The
//! chip data selects them by `version`.

pub mod rcc;
