// Constrained generation: a request may carry a TokenConstraint that decides
// which tokens may come next (a grammar over the generated text). The engine
// samples as usual; when the sampled token is not allowed it masks every
// token the constraint refuses and samples again from the rest, so the
// output follows the grammar while the model still picks among what it
// allows. Generation ends when the constraint is complete.
#pragma once

#include <cstdint>

namespace pensieve {

class TokenConstraint {
 public:
  virtual ~TokenConstraint() = default;
  // Whether `token` may be generated next.
  virtual bool allows(int32_t token) const = 0;
  // Records a generated token (one that allows() accepted).
  virtual void accept(int32_t token) = 0;
  // True when the grammar is satisfied and nothing more may follow.
  virtual bool complete() const = 0;
};

}  // namespace pensieve
