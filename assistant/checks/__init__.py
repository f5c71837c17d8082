"""The means to check an answer: which passages it quotes (:mod:`.attribution`), the evidence
sentences (:mod:`.evidence`), the number and drug-term guards (:mod:`.number_guard`,
:mod:`.term_guard`), refusals (:mod:`.refusal`), and the order the chain runs them in
(:mod:`.hooks`)."""
